from execution_stack import stack

__all__ = ["stack"]
