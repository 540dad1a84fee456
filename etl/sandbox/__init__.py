"""A local LACRM server that behaves as LACRM_API.md describes (see README.md beside this file).

- `cli.py`: `lacrm-etl sandbox serve`; `testing.py`: run it as a subprocess from tests.
- `server.py`: HTTP routing, faults and control endpoints; `http.py`: the HTTP/1.1 parser.
- `api.py`: the API functions; `store.py`: contacts and relationships; `seed.py`: seed files;
  `faults.py`: latency, rate limit, server errors, lost responses, outages.
"""
