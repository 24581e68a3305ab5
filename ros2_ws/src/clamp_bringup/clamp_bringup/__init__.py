"""Robot profiles, the node graph, launch files, arm driver, teleop, episode recorder and replay for ALOHA."""
