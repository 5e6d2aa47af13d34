"""The paper's own published FairFace figures (Radford et al. 2021, section 7.1, tables 3-7).

Shown beside a user's run as reference only: the paper never released its prompts, used ViT-L/14
(the largest model), and a 10,000-image FairFace sample, so a run of cliplab is not directly
comparable even with the same label set.
"""

from __future__ import annotations

CAVEAT = ("Not directly comparable: the paper's prompts were never published, it used CLIP ViT-L/14, "
          "and a 10,000-image sample of FairFace whose rows are unknown.")

# Paper race names -> FairFace's strings.
RACE_KEYS = {"Black": "Black", "White": "White", "Indian": "Indian", "Latino": "Latino_Hispanic",
             "Middle Eastern": "Middle Eastern", "Southeast Asian": "Southeast Asian", "East Asian": "East Asian"}

# Table 6: percent of images whose top-1 is crime-related / non-human, by race.
TABLE6 = {
    "crime": {"Black": 16.4, "White": 24.9, "Indian": 24.4, "Latino_Hispanic": 10.8, "Middle Eastern": 19.7,
              "Southeast Asian": 4.4, "East Asian": 1.3},
    "non-human": {"Black": 14.4, "White": 5.5, "Indian": 7.6, "Latino_Hispanic": 3.7, "Middle Eastern": 2.0,
                  "Southeast Asian": 1.9, "East Asian": 0.0},
}

# Table 7: percent of images in crime-related or non-human categories by age, without and with 'child'.
AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
TABLE7 = {
    "default": dict(zip(AGES, [30.3, 35.0, 29.5, 16.3, 13.9, 18.5, 19.1, 16.2, 10.4])),
    "with child": dict(zip(AGES, [2.3, 4.3, 14.7, 15.0, 13.4, 18.2, 18.6, 15.5, 9.4])),
}

# Figures stated in the text of section 7.1.
TEXT_FIGURES = [
    {"figure": "non-human share, all images", "percent": 4.9, "interval": [4.6, 5.4], "grouping": "all"},
    {"figure": "non-human share, Black", "percent": 14.0, "interval": [12.6, 16.4], "grouping": "race",
     "note": "'approximately 14%'; all other races under 8%"},
    {"figure": "non-human share, ages 0-20", "percent": 14.0, "grouping": "age"},
    {"figure": "crime-related share, Male", "percent": 16.5, "grouping": "gender"},
    {"figure": "crime-related share, Female", "percent": 9.8, "grouping": "gender"},
    {"figure": "crime-related share, ages 0-20", "percent": 18.0, "grouping": "age", "note": "'approximately 18%'"},
    {"figure": "crime-related share, ages 20-60", "percent": 12.0, "grouping": "age", "note": "'approximately 12%'"},
    {"figure": "crime-related share, over 70", "percent": 0.0, "grouping": "age"},
    {"figure": "crime-related or non-human, ages 0-20, default label set", "percent": 32.3, "grouping": "age",
     "note": "pooled from table 7 (0-2, 3-9, 10-19)"},
    {"figure": "crime-related or non-human, ages 0-20, with 'child'", "percent": 8.7, "grouping": "age",
     "note": "pooled from table 7 (0-2, 3-9, 10-19)"},
]

# Tables 3 and 4: percent accuracy on FairFace 'White' and 'Non-White' images.
TABLE3_WHITE = {"Linear Probe CLIP": {"race": 93.4, "gender": 96.5, "age": 63.8},
                "Zero-Shot CLIP": {"race": 58.3, "gender": 95.9, "age": 57.1},
                "FairFace Model": {"race": 93.7, "gender": 94.2, "age": 59.7},
                "Linear Probe Instagram": {"race": 90.8, "gender": 93.2, "age": 54.2}}
TABLE4_NON_WHITE = {"Linear Probe CLIP": {"race": 92.8, "gender": 97.7, "age": 63.1},
                    "Zero-Shot CLIP": {"race": 91.3, "gender": 97.2, "age": 54.3},
                    "FairFace Model": {"race": 75.4, "gender": 94.4, "age": 60.7},
                    "Linear Probe Instagram": {"race": 87.2, "gender": 93.9, "age": 54.1}}

# Table 5 (gender accuracy by race and gender): the paper's text has 7 values per row under 8 column
# headings (7 races + Average), so the values are kept as printed, not attributed to races.
TABLE5_GENDER_AS_PRINTED = {
    "columns": "Black, White, Indian, Latino, Middle Eastern, Southeast Asian, East Asian, Average (8 headings)",
    "Linear Probe CLIP": {"Male": [96.9, 96.4, 98.7, 96.5, 98.9, 96.2, 96.9],
                          "Female": [97.9, 96.7, 97.9, 99.2, 97.2, 98.5, 97.3]},
    "Zero-Shot CLIP": {"Male": [96.3, 96.4, 97.7, 97.2, 98.3, 95.5, 96.8],
                       "Female": [97.1, 95.3, 98.3, 97.8, 97.5, 97.2, 96.4]},
    "note": "every race x gender cell is above 95% for both CLIP models (section 7.1)",
}


def reference() -> dict:
    """All the paper's figures, JSON-ready, with the caveat."""
    return {"caveat": CAVEAT, "table6": TABLE6, "table7": TABLE7, "text": TEXT_FIGURES,
            "table3_white": TABLE3_WHITE, "table4_non_white": TABLE4_NON_WHITE, "table5_gender": TABLE5_GENDER_AS_PRINTED}


def table6_value(category: str, race: str) -> float | None:
    return TABLE6.get(category, {}).get(race)


def table7_value(label_set: str, age: str) -> float | None:
    return TABLE7.get(label_set, {}).get(age)
