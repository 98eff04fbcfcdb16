"""The dev edge: the HTTPS front ``tako dev`` runs on a developer's machine.

It is the server's edge (:mod:`tako_server.edge`: routing, static ``public/``, WebSockets,
forwarding headers) in one process on 127.0.0.1, fed by the ``tako dev`` sessions that
register with it over ``$TAKO_HOME/dev/edge.sock`` (:mod:`tako_common.protocol.dev`).
The CLI never imports this package (the client never imports the server): it starts it
as ``python -m tako_server.devedge`` and talks to it over the socket.

- :mod:`.registry`: which apps are served and the edge snapshot for them (pure);
- :mod:`.page`: the list of running apps and the "app is down" page (render is pure);
- :mod:`.ports`: 443/80 or the fixed high ports, and who holds a port that is taken;
- :mod:`.service`: the daemon (control socket, sessions, hooks, exit when idle).
"""
