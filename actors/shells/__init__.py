"""The pykka actors: thin shells that feed the core its inputs and carry out its outputs."""
