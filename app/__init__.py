"""The app: Gradio UI and REST API (``app.app``), the job worker (``app.job_manager``), and the
embedded-mode launcher (``app.launcher``) that starts every process of the system on localhost."""
