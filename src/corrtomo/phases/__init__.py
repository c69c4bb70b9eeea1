"""corrtomo.phases"""
