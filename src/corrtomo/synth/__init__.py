"""corrtomo.synth"""
