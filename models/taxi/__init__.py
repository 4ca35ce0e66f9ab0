"""The Chicago taxi problem: will a trip's tip exceed 20% of its fare?"""
