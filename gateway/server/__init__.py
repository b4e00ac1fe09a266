"""The HTTP server around the app: uvicorn's settings and the connection guards (`http`)."""

# The scope extension through which a call asks to be told that its client left: a
# callable taking a callback (absent under another server: the call watches receive()).
ON_DISCONNECT = "gateway.on_disconnect"
