"""latentmap.pipeline"""
