# m2n2 serve on the CPU, Debian 12. Not built by CI (see docs/integrations.md).
#   docker build -t m2n2 .
#   docker run --rm -p 127.0.0.1:8765:8765 -v "$PWD/photos:/data/images" -v "$PWD/m2n2_out:/data/out" m2n2
# The server's URL with its token is printed on stderr (docker logs).
FROM debian:12
WORKDIR /opt/m2n2
COPY . .
RUN scripts/setup-debian.sh \
 && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build --target m2n2 \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 8765
# Inside the container the server must listen on all its addresses; publish the port on
# 127.0.0.1 of the host (as above) unless others should reach it.
ENTRYPOINT ["/opt/m2n2/build/m2n2", "serve", "--host", "0.0.0.0", "--port", "8765", \
            "--images", "/data/images", "--out", "/data/out", "--max-body", "64M"]
