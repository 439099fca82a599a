"""HTTP routes, one router per area (FastAPI's "bigger applications" layout):

``system``   ``/healthz`` and ``/openapi.json``;
``auth``     log in and out (``/api/auth``);
``studies``  intake, worklist, study detail, reading status, PACS pull (``/api/studies``);
``images``   PNG rendering for the viewer (``/api/images``);
``reader``   reader-study mode (``/api/reader``);
``admin``    accounts, reader-study set-up, export (``/api/admin``);
``pages``    the HTML viewer (Jinja2 templates extending ``templates/base.html``).

Routes get the service, the database session and the signed-in user from
:mod:`mammolens.serve.deps`, query through :mod:`mammolens.serve.queries` and answer with
the models of :mod:`mammolens.serve.schemas`.
"""

from mammolens.serve.routes import admin, auth, images, pages, reader, studies, system

#: the routers in the order the app includes them
ROUTERS = (system.router, auth.router, studies.router, images.router, reader.router, admin.router, pages.router)
