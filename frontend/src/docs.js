// The API docs page: Swagger UI reading the service's own OpenAPI document.
window.addEventListener("DOMContentLoaded", () => {
  window.SwaggerUIBundle({ url: "/api/v1/openapi.json", dom_id: "#swagger", deepLinking: true });
});
