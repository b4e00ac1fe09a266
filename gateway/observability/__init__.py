"""What the gateway tells operators: Prometheus metrics, OpenTelemetry traces, structured
logs, and the GenAI semantic-convention names they share (`genai`)."""
