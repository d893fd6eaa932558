from ragstream.cli import app

app()
