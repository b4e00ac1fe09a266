"""The HTTP server around the app: uvicorn's settings and the connection guards (`http`)."""
