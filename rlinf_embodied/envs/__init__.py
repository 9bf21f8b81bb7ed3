# env layer; registration lives in registration.py
