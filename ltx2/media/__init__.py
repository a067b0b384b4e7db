"""Media at the edges: decoding and fetching the user's images and audio, the audio VAE's log-mel
front end, and encoding the finished frames and soundtrack into a file. Nothing here knows about
the models' weights or the HTTP layer."""
