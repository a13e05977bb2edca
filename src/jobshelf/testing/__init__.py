"""jobshelf's conformance kit: prove a serializer loses nothing (needs ``pip install "jobshelf[testing]"``)."""
