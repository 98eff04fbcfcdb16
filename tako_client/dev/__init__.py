"""``tako dev``: the app on a trusted local HTTPS URL, with production's routing and variables.

- :mod:`.settings`: where things live (``$TAKO_HOME/ca``, ``$TAKO_HOME/dev``, the app's
  ``.tako/dev``) and the port overrides (the only reader of the environment here);
- :mod:`.command`: which dev command runs (pure);
- :mod:`.environ`: the app's environment and local storages (pure);
- :mod:`.machine`: what a session does on each event (pure, playbook-tested);
- :mod:`.watch`: file changes under the app directory, ``.gitignore`` respected;
- :mod:`.ca` / :mod:`.trust`: the local certificate authority and the system trust store;
- :mod:`.edgelink`: the client of the dev edge (started on demand);
- :mod:`.session`: the shell that runs the app and executes the machine's actions.
"""
