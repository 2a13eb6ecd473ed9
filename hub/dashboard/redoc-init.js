// Starts the hub's own copy of ReDoc on this hub's OpenAPI description (a file, not an inline script).
"use strict";
Redoc.init("/openapi.json", { hideDownloadButton: false }, document.getElementById("api-page"));
