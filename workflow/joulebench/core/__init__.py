"""Foundation every stage uses: the error types, atomic writes, host CPU facts and input parsing."""
