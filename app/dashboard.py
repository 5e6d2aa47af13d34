"""The Streamlit dashboard (`cliplab dashboard`): browse, filter and compare saved audit sessions and
evaluation runs, read-only over the catalog database, with the same plots as the audit reports."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from streamlit.components.v1 import html

from cliplab.app.services import audit, eval_store
from cliplab.app.services.library import Catalog, default_url, open_catalog
from cliplab.engine.errors import CliplabError


@st.cache_resource
def _opened(url: str) -> Catalog:
    return open_catalog(url)


def catalog() -> Catalog:
    """The catalog database (CLIPLAB_DATABASE_URL, else the data directory's), opened once per URL."""
    return _opened(default_url())


def pick(frame: pd.DataFrame, column: str, label: str, key: str) -> pd.DataFrame:
    """A multiselect filter on one column (empty = everything)."""
    options = sorted(frame[column].dropna().astype(str).unique())
    chosen = st.multiselect(label, options, key=key)
    return frame[frame[column].astype(str).isin(chosen)] if chosen else frame


PROPORTIONS = ("share", "low", "high", "share_a", "share_b", "change", "change_low", "change_high", "top1", "top5",
               "accuracy", "mean", "std", "worst value", "worst 95% low", "worst 95% high", "best value", "gap",
               "gap 95% low", "gap 95% high")


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """Proportions as percentages with one decimal (a Wilson bound of 2.78e-17 reads 0.0%), other floats
    with 4 significant digits; what Streamlit would otherwise print in full precision."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if not pd.api.types.is_float_dtype(values):
            continue
        if column in PROPORTIONS:
            frame[column] = values.map(lambda v: "–" if pd.isna(v) else f"{100 * v:.1f}%")
        else:
            frame[column] = values.map(lambda v: "–" if pd.isna(v) else f"{v:.4g}")
    return frame


def audit_page() -> None:
    sessions = pd.DataFrame(audit.list_sessions(catalog()))
    if sessions.empty:
        st.info("No audit sessions are saved yet. Run one in the app's Audit tab (or `cliplab audit run`).")
        return
    left, middle, right = st.columns(3)
    with left:
        sessions = pick(sessions, "model", "Model", "audit-model")
    with middle:
        sessions = pick(sessions, "dataset", "Dataset", "audit-dataset")
    with right:
        words = st.text_input("Label sets contain", key="audit-labels")
    if words:
        sessions = sessions[sessions["label_sets"].str.contains(words, case=False, regex=False)]
    st.dataframe(sessions, hide_index=True, width="stretch")
    if sessions.empty:
        st.warning("No session matches these filters.")
        return
    ids = sessions["id"].tolist()
    tab_one, tab_two = st.tabs(["One session", "Compare two sessions"])
    with tab_one:
        chosen = st.selectbox("Session", ids, key="audit-session")
        result = audit.show(catalog(), chosen)
        st.markdown("\n".join(f"- {line}" for line in audit.summary_lines(result)))
        shares = audit.shares_frame(result)
        st.subheader("Category shares by group")
        st.dataframe(readable(shares), hide_index=True, width="stretch")
        gaps = audit.gaps_frame(result)
        if not gaps.empty:
            st.subheader("Worst group and gap to the best, every measure")
            st.dataframe(readable(gaps), hide_index=True, width="stretch")
        search = audit.search_bias_frame(result)
        if not search.empty:
            st.subheader("Search bias (MaxSkew@K, MinSkew@K, NDKL)")
            st.dataframe(readable(search), hide_index=True, width="stretch")
        with st.expander("The full report (the same tables and plots as the HTML export)", expanded=True):
            html(audit.render_html(result), height=900, scrolling=True)
    with tab_two:
        if len(ids) < 2:
            st.info("Save a second session (the same dataset with another label set or model) to compare.")
            return
        a = st.selectbox("Session A", ids, key="audit-a")
        b = st.selectbox("Session B", ids, index=1, key="audit-b")
        try:
            diff = audit.diff(catalog(), a, b)
        except CliplabError as error:
            st.error(str(error))
            return
        st.markdown(f"{diff.images} images in common; focus categories: {', '.join(diff.focus)}.")
        st.dataframe(readable(audit.diff_frame(diff.label_set_diff)), hide_index=True, width="stretch")
        st.dataframe(readable(audit.table_frame(diff.transitions)), hide_index=True, width="stretch")


def confusion_figure(confusion: list[list[int]], classnames: list[str], title: str) -> go.Figure:
    """The evaluation report's interactive confusion matrix (app.services.evaluate.save_confusion)."""
    figure = go.Figure(go.Heatmap(z=confusion, x=classnames, y=classnames, colorscale="Blues",
                                  hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>"))
    figure.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed")
    return figure


def per_class_figure(per_class: list[dict], title: str) -> go.Figure:
    """Accuracy of each class (the recall of its row of the confusion matrix), worst first."""
    rows = pd.DataFrame(per_class).dropna(subset=["accuracy"]).sort_values("accuracy")  # no images: no bar
    figure = go.Figure(go.Bar(x=100 * rows["accuracy"], y=rows["label"].astype(str), orientation="h",
                              text=[f"{c}/{n}" for c, n in zip(rows["correct"], rows["images"])],
                              hovertemplate="%{y}: %{x:.1f}% (%{text})<extra></extra>"))
    figure.update_layout(title=title, xaxis_title="accuracy (%)", xaxis_range=[0, 100],
                         height=max(260, 60 + 22 * len(rows)))
    return figure


def fewshot_figure(table: list[dict], zero_shot: float, title: str) -> go.Figure:
    """The evaluation report's zero-shot vs k-shot curve (app.services.evaluate.plot_fewshot)."""
    figure = go.Figure(go.Scatter(x=[r["shots"] for r in table], y=[100 * r["mean"] for r in table],
                                  error_y=dict(array=[100 * r["std"] for r in table]), mode="lines+markers",
                                  name="linear probe (mean ± std over seeds)"))
    figure.add_hline(y=100 * zero_shot, line_dash="dash", line_color="red", annotation_text="zero-shot")
    figure.update_layout(title=title, xaxis_type="log", xaxis_title="labelled examples per class",
                         yaxis_title="accuracy (%)")
    return figure


def eval_page() -> None:
    runs = pd.DataFrame(eval_store.list_eval_runs(catalog()))
    if runs.empty:
        st.info("No evaluation runs are saved yet. `cliplab eval zeroshot|probe|fewshot|retrieval` saves one.")
        return
    left, middle, right = st.columns(3)
    with left:
        runs = pick(runs, "kind", "Kind", "eval-kind")
    with middle:
        runs = pick(runs, "model", "Model", "eval-model")
    with right:
        runs = pick(runs, "dataset", "Dataset", "eval-dataset")
    st.dataframe(runs, hide_index=True, width="stretch")
    if runs.empty:
        st.warning("No run matches these filters.")
        return
    if "top1" in runs and runs["top1"].notna().any():
        scored = runs[runs["top1"].notna()]
        bars = go.Figure(go.Bar(x=[f"{m} · {Path(d).name} · {i}" for m, d, i in
                                   zip(scored.model, scored.dataset, scored.id)],
                                y=100 * scored["top1"], text=[f"{100 * v:.1f}%" for v in scored["top1"]]))
        bars.update_layout(title="top-1 accuracy of the runs shown", yaxis_title="%", height=320)
        st.plotly_chart(bars, width="stretch")
    run = eval_store.load_eval_run(catalog(), st.selectbox("Run", runs["id"].tolist(), key="eval-run"))
    metrics = run["metrics"]
    name = Path(run["dataset"]).name or run["dataset"]
    st.subheader(f"{run['kind']} · {run['model']} · {name}")
    st.caption(f"dataset {run['dataset']}" + (f" (sha256 {run['dataset_hash'][:16]}…)" if run["dataset_hash"] else "")
               + f" · model fingerprint {run['model_fingerprint']} · {run['created_at']}")
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    st.dataframe(readable(pd.DataFrame([numbers])), hide_index=True, width="stretch")
    if metrics.get("options"):
        st.markdown("Options: " + ", ".join(f"`{k}` = {v}" for k, v in metrics["options"].items()))
    if metrics.get("per_class"):
        st.plotly_chart(per_class_figure(metrics["per_class"], f"per-class accuracy: {name}"), width="stretch")
        st.dataframe(readable(pd.DataFrame(metrics["per_class"])), hide_index=True, width="stretch")
    if metrics.get("confusion") and metrics.get("per_class"):
        names = [row["label"] for row in metrics["per_class"]]
        st.plotly_chart(confusion_figure(metrics["confusion"], names, f"confusion: {name}"), width="stretch")
    if metrics.get("fewshot"):
        st.plotly_chart(fewshot_figure(metrics["fewshot"], metrics["zero_shot_top1"], f"zero-shot vs few-shot: {name}"),
                        width="stretch")
        st.dataframe(readable(pd.DataFrame(metrics["fewshot"])), hide_index=True, width="stretch")
    if isinstance(metrics.get("image_to_text"), dict):
        recalls = pd.DataFrame({direction.replace("_", " "): metrics[direction]
                                for direction in ("image_to_text", "text_to_image")})
        st.dataframe(recalls.rename(index=lambda k: f"R@{k}"), width="stretch")


def main() -> None:
    st.set_page_config(page_title="cliplab dashboard", layout="wide")
    st.title("cliplab dashboard")
    st.caption("Saved audit sessions and evaluation runs from the catalog database (read-only).")
    page = st.sidebar.radio("Show", ["Audit sessions", "Evaluation runs"], key="page")
    try:  # a statement, not an expression: Streamlit's "magic" would print the None it returns
        if page == "Audit sessions":
            audit_page()
        else:
            eval_page()
    except CliplabError as error:
        st.error(str(error))


main()
