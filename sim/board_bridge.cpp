// Board-in-the-loop simulation: the board's top level (host interface, UART and core, without
// the PLL) in Verilator, bridged to a TCP socket on 127.0.0.1. Bytes from the TCP client are sent
// as UART frames (8N1) on the design's rx line; frames the design sends on its tx line are
// decoded and written back to the client. The design's own UART RTL does all the protocol work,
// so the host tool sees exactly what it would see on the board's serial port (pyserial's
// socket://127.0.0.1:PORT).
//
// Usage: sbnn_bridge DIVISOR PORT IDLE_CYCLES
//   DIVISOR      clocks per UART bit (the divisor the design was built with)
//   PORT         TCP port (0: any free port); the chosen one is printed as
//                "sbnn-bridge listening on 127.0.0.1:PORT"
//   IDLE_CYCLES  after this many cycles with nothing on either line and nothing queued, the
//                simulation blocks on the socket instead of spinning (longer than the design's
//                frame timeout, so that a timeout still happens in simulated time)
// Serves one client at a time, forever; the design keeps its state between clients.

#include "Vsbnn_sim_top.h"
#include "verilated.h"

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

static Vsbnn_sim_top* top;
static unsigned long long cycles = 0;

static void tick() {
    top->clk = 1;
    top->eval();
    top->clk = 0;
    top->eval();
    ++cycles;
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s DIVISOR PORT IDLE_CYCLES\n", argv[0]);
        return 2;
    }
    const int divisor = atoi(argv[1]);
    const int port = atoi(argv[2]);
    const unsigned long long idle_limit = strtoull(argv[3], nullptr, 10);
    signal(SIGPIPE, SIG_IGN);
    Verilated::commandArgs(1, argv);
    top = new Vsbnn_sim_top;

    int server = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port);
    if (bind(server, (sockaddr*)&address, sizeof address) != 0 || listen(server, 1) != 0) {
        fprintf(stderr, "sbnn-bridge: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        return 1;
    }
    socklen_t length = sizeof address;
    getsockname(server, (sockaddr*)&address, &length);
    printf("sbnn-bridge listening on 127.0.0.1:%d\n", ntohs(address.sin_port));
    fflush(stdout);

    top->clk = 0;
    top->rst = 1;
    top->rx = 1;
    for (int i = 0; i < 8; ++i) tick();
    top->rst = 0;

    while (true) {
        int client = accept(server, nullptr, nullptr);
        if (client < 0) continue;
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        std::deque<unsigned char> to_board;
        std::string to_host;
        // rx driver: the frame being sent (start, 8 data bits, stop), bit index, clocks left.
        int tx_frame = 0, tx_bit = -1, tx_left = 0;
        // tx decoder: -1 idle, else bits sampled so far.
        int rx_bit = -1, rx_left = 0, rx_value = 0;
        unsigned long long idle = 0;
        bool open = true;
        while (open) {
            bool quiet = to_board.empty() && tx_bit < 0 && rx_bit < 0 && top->tx;
            idle = quiet ? idle + 1 : 0;
            if ((cycles & 255) == 0 || idle > idle_limit) {
                if (!to_host.empty()) {
                    ssize_t sent = send(client, to_host.data(), to_host.size(), 0);
                    if (sent < 0 && errno != EAGAIN) open = false;
                    else if (sent > 0) to_host.erase(0, sent);
                }
                pollfd fd{client, POLLIN, 0};
                int wait = (idle > idle_limit && to_host.empty()) ? 50 : 0;
                if (poll(&fd, 1, wait) > 0) {
                    unsigned char buffer[4096];
                    ssize_t got = recv(client, buffer, sizeof buffer, MSG_DONTWAIT);
                    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) open = false;
                    for (ssize_t i = 0; i < got; ++i) to_board.push_back(buffer[i]);
                    if (got > 0) idle = 0;
                }
                if (idle > idle_limit) continue;  // blocked: nothing changes in the design meanwhile
            }
            // Host -> board: one UART frame after another.
            if (tx_bit < 0 && !to_board.empty()) {
                tx_frame = (to_board.front() << 1) | (1 << 9);
                to_board.pop_front();
                tx_bit = 0;
                tx_left = divisor;
            }
            if (tx_bit >= 0) {
                top->rx = (tx_frame >> tx_bit) & 1;
                if (--tx_left == 0) {
                    tx_left = divisor;
                    if (++tx_bit == 10) tx_bit = -1;
                }
            } else {
                top->rx = 1;
            }
            tick();
            // Board -> host: sample the middle of each bit.
            if (rx_bit < 0) {
                if (!top->tx) {
                    rx_bit = 0;
                    rx_value = 0;
                    rx_left = divisor + divisor / 2;
                }
            } else if (--rx_left == 0) {
                if (rx_bit < 8) {
                    rx_value |= (top->tx & 1) << rx_bit;
                    ++rx_bit;
                    rx_left = divisor;
                } else {
                    if (top->tx) to_host.push_back((char)rx_value);  // else: framing error, dropped
                    rx_bit = -1;
                }
            }
        }
        if (!to_host.empty()) send(client, to_host.data(), to_host.size(), 0);
        close(client);
    }
}
