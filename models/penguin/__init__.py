"""The penguin problem: which of three species is this bird?"""
