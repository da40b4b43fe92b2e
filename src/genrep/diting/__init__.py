"""DITING: Chinese->English web-novel translation benchmark and AgentEval (PAPERS.md section 3)."""
