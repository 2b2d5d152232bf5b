"""capgen-demo: a local web page that captions pictures with checkpoints side by side.

served.py      the model side, without gradio: checkpoints, pictures, one caption per checkpoint
page.py        the gradio page and its /caption API endpoint
app.py         start-up: settings, loading, examples, serving
"""
