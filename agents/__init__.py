"""hwnas.agents"""
