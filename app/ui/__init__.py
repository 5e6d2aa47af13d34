"""The Gradio tabs: each module exposes build(state: AppState) -> None, called inside its gr.Tab."""
