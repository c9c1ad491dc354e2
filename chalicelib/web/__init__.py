"""The web pages: server-rendered HTML (Jinja2) with a signed cookie session. Only this
package and `chalicelib/api/` import Chalice; business rules stay in the services."""
