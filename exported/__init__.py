"""The shipped model, installed with ferkeras as package data: `ferkeras predict --model shipped`."""
