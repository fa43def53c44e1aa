"""latentmap.components"""
