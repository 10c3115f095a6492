"""Project configuration: settings, URL routing, the one NinjaAPI, ASGI/WSGI entry points."""
