"""HTTP side of the editor: page routes and the JSON API."""
