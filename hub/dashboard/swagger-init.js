// Starts the hub's own copy of Swagger UI on this hub's OpenAPI description (a file, not an inline
// script: the page keeps the dashboard's CSP). Served at /docs by hub/api/routes/frontend.py.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#api-page",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  oauth2RedirectUrl: `${window.location.origin}/docs/oauth2-redirect`,
  persistAuthorization: false,
});
