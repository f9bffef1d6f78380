"""Serving experiments: a real server under a generated load, its energy per request measured.

- :mod:`~joulebench.serving.session`: one session (a server, its experiments, their records);
- :mod:`~joulebench.serving.servers`: a server's life (start, wait healthy, stop its group);
- :mod:`~joulebench.serving.load_plan`: an experiment's requests (prompts, arrivals, releases);
- :mod:`~joulebench.serving.loadgen`: the load generator (open and closed loop), with
  :mod:`~joulebench.serving.protocols` (the wire), :mod:`~joulebench.serving.request` (a request
  and its result), :mod:`~joulebench.serving.pacing` (keeping time) and
  :mod:`~joulebench.serving.watchdog` (a dead or hung server);
- :mod:`~joulebench.serving.summaries`: an experiment record's latency, energy and load figures.

What a session is asked to do (server specs, experiments, session specs) is data of the study:
:mod:`joulebench.study.serving_specs`.
"""
