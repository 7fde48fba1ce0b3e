"""Test fakes and tiny synthetic inputs that ship with the package."""
