"""DITING: Chinese->English web-novel translation benchmark and AgentEval (docs/papers.md section 3)."""
