"""The pure core: names, config, keys, signing, tarballs, the index, history, trust, readiness.

Takes bytes and values, returns values; no network, no store, no aiohttp.
"""
