"""corrtomo.io"""
