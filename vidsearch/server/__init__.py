"""The web app (`vidsearch serve`): a JSON API over one index and the pages that use it.

Needs the optional extra `vidsearch[serve]` (FastAPI, uvicorn, python-multipart, prometheus-client).
"""
