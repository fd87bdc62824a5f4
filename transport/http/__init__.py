"""The Streamable HTTP front (``troupe http``): pure rules (`rules`, `replay`, `routing`, `params`), the
sessions it holds on the daemon (`sessions`), the endpoints (`app`) and the program (`program`)."""
