"""What requests look like: arrival processes, arrival shaping and the prompts they carry."""
