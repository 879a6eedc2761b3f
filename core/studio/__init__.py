"""`gendeg studio`: a local server for the ComfyUI frontend."""
