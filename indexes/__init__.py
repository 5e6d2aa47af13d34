"""The photo catalog (SQLAlchemy, the source of truth) and the FAISS vector indexes derived from it."""
