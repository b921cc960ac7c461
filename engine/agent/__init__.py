"""The agent: its file, tools and their runner, the Asterisk manager client."""
