"""Where alerts come from: Falco's gRPC outputs API and its http_output."""
