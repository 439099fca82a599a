"""The reading-room service: ``mammolens serve``.

FastAPI app (:mod:`.app`), database models and Alembic migrations (:mod:`.models`,
:mod:`.db`), accounts and sessions (:mod:`.auth`), the background scoring worker
(:mod:`.worker`, :mod:`.scoring`), study intake (:mod:`.intake`: uploads, DICOMweb pulls
(:mod:`.dicomweb`) and a watched folder (:mod:`.watch`)), server-side rendering
(:mod:`.render`) and the web viewer (``static/``, ``templates/``).

Heavy libraries (torch, highdicom) are imported lazily, so importing this package is cheap.
"""
