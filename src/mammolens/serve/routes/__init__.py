"""HTTP routes: ``auth`` (login), ``studies`` (intake, worklist, PACS pull), ``images``
(PNG rendering), ``reader`` (reader-study mode), ``admin`` (accounts, reader study,
export) and ``pages`` (the HTML viewer)."""
