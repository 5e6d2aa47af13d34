"""cliplab's front ends: the CLI, the service layer, the Gradio app and the Streamlit dashboard."""
