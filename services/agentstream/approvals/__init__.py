"""Human approval of tool calls: the topology's policy, the request and decision records,
and the gate the durable agent loop asks before it runs a tool (README "Human approval")."""
