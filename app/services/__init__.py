"""The service layer: every user action once, called by the CLI, Gradio and Streamlit alike."""
