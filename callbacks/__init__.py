"""latentmap.callbacks"""
