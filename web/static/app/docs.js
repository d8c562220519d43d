(()=>{window.addEventListener("DOMContentLoaded",()=>{window.SwaggerUIBundle({url:"/api/v1/openapi.json",dom_id:"#swagger",deepLinking:!0})});})();
