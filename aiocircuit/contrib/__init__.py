"""Integrations with HTTP clients, each behind its own optional extra.

* :mod:`aiocircuit.contrib.httpx` (``pip install 'aiocircuit[httpx]'``): a transport for
  ``httpx.AsyncClient`` and ``httpx.Client``.
* :mod:`aiocircuit.contrib.aiohttp` (``pip install 'aiocircuit[aiohttp]'``): a client
  middleware for ``aiohttp.ClientSession``.

Both keep one circuit per origin (``scheme://host:port``) by default, count 5xx responses
and connection errors as failures, and reject a call to an open circuit before any
connection is made. Importing this package imports neither client library.
"""
