"""mitmproxy addons: thin glue between mitmproxy's event hooks and the schoolgate core."""
